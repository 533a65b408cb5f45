"""Lambda handlers: thin shells (parse, call the plain functions, shape the response). No image library imports."""
