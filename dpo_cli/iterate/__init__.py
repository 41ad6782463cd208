"""`dpo iterate`: rounds of sample -> score -> pair -> train, each round starting from the last (`runner`)."""
