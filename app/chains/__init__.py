"""Action chains (issue 20): follow-up steps across channels, each decided with the send gate at its due time."""
