"""`dpo sweep-beta`: train one run per strength value (and learning rate), judge each on held-out
pairs, and pick the winner (`runner`); its tables, plot and console lines (`report`)."""
