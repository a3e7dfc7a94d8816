"""Existing customers (UWG §7(3)): purchases made with an email address, the evidence of that basis."""
