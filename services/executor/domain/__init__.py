"""The executor's pure rules for positions after the copy: settlement, redemption, reconciliation."""
