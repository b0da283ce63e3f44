"""The review queue: items chosen from detection runs, people's decisions, and the training clips they become."""
