"""Rock-Token analyses: census, gradients, persistence, knockout, freeze
experiments, report."""
