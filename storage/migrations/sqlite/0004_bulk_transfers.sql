-- Bulk transfers: the bulk as received, its insert-only state history, its
-- lines in order (with the refusal of a line that never became a transfer,
-- such as a duplicate id), and the hashes of the payee's fulfil and error.
-- Each accepted line is an ordinary transfer row that names its bulk.

ALTER TABLE transfer ADD COLUMN bulk_transfer_id VARCHAR(64) NULL;
CREATE INDEX transfer_bulk ON transfer (bulk_transfer_id);

CREATE TABLE bulk_transfer (
  bulk_transfer_id VARCHAR(64) NOT NULL PRIMARY KEY,
  bulk_quote_id VARCHAR(64) NOT NULL,
  payer_fsp VARCHAR(32) NOT NULL,
  payee_fsp VARCHAR(32) NOT NULL,
  expiration VARCHAR(40) NOT NULL,
  expiration_ms INTEGER NOT NULL,
  prepare_hash VARCHAR(64) NOT NULL,
  content_version VARCHAR(8) NOT NULL,
  created_date VARCHAR(32) NOT NULL
);

-- insert-only: every state of every bulk, with its reason
CREATE TABLE bulk_transfer_state_change (
  bulk_transfer_state_change_id INTEGER PRIMARY KEY AUTOINCREMENT,
  bulk_transfer_id VARCHAR(64) NOT NULL,
  state VARCHAR(32) NOT NULL,
  reason VARCHAR(512) NULL,
  created_date VARCHAR(32) NOT NULL
);
CREATE INDEX bulk_transfer_state_change_bulk ON bulk_transfer_state_change (bulk_transfer_id, bulk_transfer_state_change_id);

CREATE TABLE bulk_transfer_line (
  bulk_transfer_id VARCHAR(64) NOT NULL,
  line_no INTEGER NOT NULL,
  transfer_id VARCHAR(64) NOT NULL,
  refusal_code VARCHAR(4) NULL,
  refusal_description VARCHAR(1024) NULL,
  PRIMARY KEY (bulk_transfer_id, line_no)
);

-- the payee's fulfil (FULFIL) and error (ERROR) hashes, and the
-- completedTimestamp the payee gave with its fulfil
CREATE TABLE bulk_transfer_duplicate_check (
  bulk_transfer_id VARCHAR(64) NOT NULL,
  kind VARCHAR(16) NOT NULL,
  hash VARCHAR(64) NOT NULL,
  completed_timestamp VARCHAR(40) NULL,
  created_date VARCHAR(32) NOT NULL,
  PRIMARY KEY (bulk_transfer_id, kind)
);
