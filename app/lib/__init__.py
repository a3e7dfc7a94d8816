"""Infrastructure shared by the feature packages: database, auth, errors, observability."""
