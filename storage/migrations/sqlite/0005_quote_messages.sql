-- Quotes and bulk quotes when quote persistence is on: each request,
-- answer and error as received, for the record and duplicate detection.
CREATE TABLE quote_message (
  resource VARCHAR(24) NOT NULL,
  quote_id VARCHAR(64) NOT NULL,
  kind VARCHAR(16) NOT NULL,
  hash VARCHAR(64) NOT NULL,
  source_fsp VARCHAR(32) NOT NULL,
  destination_fsp VARCHAR(32) NOT NULL,
  body TEXT NOT NULL,
  created_date VARCHAR(32) NOT NULL,
  PRIMARY KEY (resource, quote_id, kind)
);
