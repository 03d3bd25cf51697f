"""One router per area of the API; ``serving.api`` puts them together.

Where a handler's verb name differs from the route's published name, the route
keeps that name (``name=``): the OpenAPI operationId and summary derive from it.
"""
