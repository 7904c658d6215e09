/* Wide pictures that scroll inside their own box (the campaign flow on a phone) say so.

   A phone's scroll bars are invisible until touched, so a box cut at the screen's edge looks
   like the whole picture. For each element with data-scroll-hint="ID": while it scrolls
   sideways at all, the element ID (a "scroll sideways" line, served hidden) is shown; and its
   parent (the .scroll-frame) gets the classes more-left / more-right while there is more to see
   that way, which the stylesheet draws as a fade on that edge. A ResizeObserver keeps this
   true when the window turns or resizes. Without scripts the box still scrolls (and takes the
   keyboard: it is a labelled region with tabindex="0"); only the hint is missing. */
(function () {
  "use strict";

  function update(box) {
    var hint = document.getElementById(box.getAttribute("data-scroll-hint"));
    var hidden = box.scrollWidth - box.clientWidth; // pixels out of sight
    var frame = box.parentElement;
    if (hint) {
      hint.hidden = hidden < 1;
    }
    frame.classList.toggle("more-left", box.scrollLeft >= 1);
    frame.classList.toggle("more-right", box.scrollLeft < hidden - 1);
  }

  function watch(box) {
    box.addEventListener("scroll", function () { update(box); }, { passive: true });
    if (window.ResizeObserver) {
      var observer = new ResizeObserver(function () { update(box); });
      observer.observe(box);
      if (box.firstElementChild) {
        observer.observe(box.firstElementChild);
      }
    }
    update(box);
  }

  document.querySelectorAll("[data-scroll-hint]").forEach(watch);
})();
