"""The email channel: double opt-in, hosted confirm and unsubscribe pages, bounces and complaints."""
