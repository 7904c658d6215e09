"""The FastAPI app: public forms, tracking, unsubscribe; one route module per resource."""
