"""Guard: take-profit / stop-loss / trailing / ladder / OCO triggers and performance rules."""
