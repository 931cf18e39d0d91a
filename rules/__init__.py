"""One module per rule. A rule class here is registered by being defined here: adding a rule
touches one file. Installed as `placement_lint.rules`."""
