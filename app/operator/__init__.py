"""The service operator's API: workspaces by API (scope ``operator``)."""
