"""Shipping new versions: shadow (what a version would write, compared with what people did),
canary (a stable share of customers, widened by promotion, halted by its rules) and the evaluation
results a version needs before it serves more than the plan's first step."""
