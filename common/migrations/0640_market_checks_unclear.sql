-- A held market closed without a clear winner (a 50/50 or voided result, a dispute, a venue that has not said
-- yet) is checked again and again, and its positions stay open. Ingest records since when each check has
-- found it so, and when it raised the one alert that asks an operator to look.
ALTER TABLE market_checks
    ADD COLUMN IF NOT EXISTS unclear_since timestamptz,
    ADD COLUMN IF NOT EXISTS unclear_alerted_at timestamptz;
