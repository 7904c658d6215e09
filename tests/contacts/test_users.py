"""Dashboard users' passwords in the contact database: one set of rules for every way a password
is set, a change that signs out every other browser, and enabling a disabled user again."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from contacts import users
from contacts.db import session_scope
from contacts.errors import NotFound
from contacts.models import DashboardSession, User

OLD = "correct horse battery staple"
NEW = "purple elephant violin sunrise"


def _user_with_sessions(engine: Engine, email: str, count: int) -> list[str]:
    """A user signed in from ``count`` browsers; their cookies' tokens."""
    with session_scope(engine) as s:
        user = users.create_user(s, email, OLD, "marketer")
        return [users.start_session(s, user) for _ in range(count)]


def _signed_in(engine: Engine, token: str) -> bool:
    with session_scope(engine) as s:
        return users.load_session(s, token) is not None


def test_password_rules_are_the_same_for_create_and_change(any_engine: Engine) -> None:
    _user_with_sessions(any_engine, "mia@example.com", 0)
    for bad, says in (("short", "at least 10"), ("x" * 1001, "at most 1000")):
        with session_scope(any_engine) as s, pytest.raises(users.InvalidUser, match=says):
            users.set_password(s, "mia@example.com", bad)
        with session_scope(any_engine) as s, pytest.raises(users.InvalidUser, match=says):
            users.create_user(s, "kim@example.com", bad, "sales")
    with session_scope(any_engine) as s:
        assert users.authenticate(s, "mia@example.com", OLD) is not None  # nothing changed
        users.check_password_rules("x" * 10)
        users.check_password_rules("x" * 1000)


def test_set_password_rehashes_and_only_the_new_one_signs_in(any_engine: Engine) -> None:
    _user_with_sessions(any_engine, "mia@example.com", 0)
    with session_scope(any_engine) as s:
        before = s.exec(select(User)).one().password_hash
        users.set_password(s, "MIA@example.com", NEW)
    with session_scope(any_engine) as s:
        user = s.exec(select(User)).one()
        assert user.password_hash.startswith("$argon2id$") and user.password_hash != before
        assert NEW not in user.password_hash
        assert users.password_matches(user, NEW) and not users.password_matches(user, OLD)
        assert users.authenticate(s, "mia@example.com", OLD) is None
        assert users.authenticate(s, "mia@example.com", NEW) is not None


def test_a_change_ends_every_other_session_and_keeps_the_current(any_engine: Engine) -> None:
    here, thief, other = _user_with_sessions(any_engine, "mia@example.com", 3)
    (someone_else,) = _user_with_sessions(any_engine, "kim@example.com", 1)
    with session_scope(any_engine) as s:
        user = s.exec(select(User).where(User.email == "mia@example.com")).one()
        users.set_password(s, user, NEW, keep_session_id=users.session_id(here))
    assert _signed_in(any_engine, here)
    assert not _signed_in(any_engine, thief) and not _signed_in(any_engine, other)
    assert _signed_in(any_engine, someone_else)  # another user's sessions are theirs


def test_a_reset_without_a_session_to_keep_ends_them_all(any_engine: Engine) -> None:
    tokens = _user_with_sessions(any_engine, "mia@example.com", 2)
    with session_scope(any_engine) as s:
        users.set_password(s, "mia@example.com", NEW)
    assert not any(_signed_in(any_engine, t) for t in tokens)
    with session_scope(any_engine) as s:
        assert s.exec(select(DashboardSession)).all() == []


def test_a_refused_password_ends_no_session(any_engine: Engine) -> None:
    (token,) = _user_with_sessions(any_engine, "mia@example.com", 1)
    with session_scope(any_engine) as s, pytest.raises(users.InvalidUser):
        users.set_password(s, "mia@example.com", "short")
    assert _signed_in(any_engine, token)


def test_unknown_addresses_are_not_found(any_engine: Engine) -> None:
    with session_scope(any_engine) as s:
        with pytest.raises(NotFound, match=r"no user nobody@example\.com"):
            users.set_password(s, "Nobody@example.com", NEW)
        with pytest.raises(NotFound):
            users.enable_user(s, "nobody@example.com")


def test_password_matches_refuses_what_no_password_can_be(any_engine: Engine) -> None:
    _user_with_sessions(any_engine, "mia@example.com", 0)
    with session_scope(any_engine) as s:
        user = s.exec(select(User)).one()
        assert not users.password_matches(user, "")
        assert not users.password_matches(user, OLD + "x" * 1000)
        user.password_hash = "not a hash"
        assert not users.password_matches(user, OLD)


def test_enable_is_the_inverse_of_disable(any_engine: Engine) -> None:
    (token,) = _user_with_sessions(any_engine, "mia@example.com", 1)
    with session_scope(any_engine) as s:
        users.disable_user(s, "mia@example.com")
        assert users.authenticate(s, "mia@example.com", OLD) is None
    with session_scope(any_engine) as s:
        assert users.enable_user(s, "Mia@Example.com").active
    assert not _signed_in(any_engine, token)  # disabling ended it for good
    with session_scope(any_engine) as s:
        assert users.authenticate(s, "mia@example.com", OLD) is not None


def test_a_disabled_user_stays_disabled_after_a_reset(any_engine: Engine) -> None:
    _user_with_sessions(any_engine, "mia@example.com", 0)
    with session_scope(any_engine) as s:
        users.disable_user(s, "mia@example.com")
        assert not users.set_password(s, "mia@example.com", NEW).active
        assert users.authenticate(s, "mia@example.com", NEW) is None
