-- Transfer rows and their history are keyed by an ever-increasing
-- transfer_seq instead of the DFSP's transfer id.
--
-- Why: transfer ids are random (UUID v4 from most DFSPs). With the id leading
-- every transfer index, each new transfer inserted into five B-trees at
-- random pages; once they outgrew the page cache, the embedded node could not
-- hold 3,000 transfers/s for more than a minute (docs/performance.md). Now
-- the only random-key index is the small unique index on transfer.transfer_id;
-- everything else is appended at the right edge of its B-tree.

CREATE TABLE transfer_by_seq (
  transfer_seq INTEGER PRIMARY KEY AUTOINCREMENT,
  transfer_id VARCHAR(64) NOT NULL UNIQUE,
  payer_fsp VARCHAR(32) NOT NULL,
  payee_fsp VARCHAR(32) NOT NULL,
  amount INTEGER NOT NULL,
  currency_id VARCHAR(3) NOT NULL,
  ilp_condition VARCHAR(64) NOT NULL,
  expiration VARCHAR(40) NOT NULL,
  expiration_ms INTEGER NOT NULL,
  ilp_packet TEXT NOT NULL,
  prepare_hash VARCHAR(64) NOT NULL,
  content_version VARCHAR(8) NOT NULL,
  created_date VARCHAR(32) NOT NULL,
  bulk_transfer_id VARCHAR(64) NULL
);
INSERT INTO transfer_by_seq (transfer_seq, transfer_id, payer_fsp, payee_fsp, amount, currency_id, ilp_condition,
  expiration, expiration_ms, ilp_packet, prepare_hash, content_version, created_date, bulk_transfer_id)
SELECT rowid, transfer_id, payer_fsp, payee_fsp, amount, currency_id, ilp_condition,
  expiration, expiration_ms, ilp_packet, prepare_hash, content_version, created_date, bulk_transfer_id
FROM transfer ORDER BY rowid;
DROP TABLE transfer;
ALTER TABLE transfer_by_seq RENAME TO transfer;
CREATE INDEX transfer_bulk ON transfer (bulk_transfer_id);

ALTER TABLE transfer_state_change ADD COLUMN transfer_seq INTEGER NOT NULL DEFAULT 0;
UPDATE transfer_state_change SET transfer_seq =
  (SELECT t.transfer_seq FROM transfer t WHERE t.transfer_id = transfer_state_change.transfer_id);
DROP INDEX transfer_state_change_transfer;
CREATE INDEX transfer_state_change_seq ON transfer_state_change (transfer_seq, transfer_state_change_id);

CREATE TABLE transfer_fulfilment_by_seq (
  transfer_seq INTEGER PRIMARY KEY,
  transfer_id VARCHAR(64) NOT NULL,
  ilp_fulfilment VARCHAR(64) NOT NULL,
  completed_timestamp VARCHAR(40) NOT NULL,
  settlement_window_id INTEGER NOT NULL,
  created_date VARCHAR(32) NOT NULL
);
INSERT INTO transfer_fulfilment_by_seq (transfer_seq, transfer_id, ilp_fulfilment, completed_timestamp, settlement_window_id, created_date)
SELECT t.transfer_seq, f.transfer_id, f.ilp_fulfilment, f.completed_timestamp, f.settlement_window_id, f.created_date
FROM transfer_fulfilment f JOIN transfer t ON t.transfer_id = f.transfer_id;
DROP TABLE transfer_fulfilment;
ALTER TABLE transfer_fulfilment_by_seq RENAME TO transfer_fulfilment;
CREATE INDEX transfer_fulfilment_window ON transfer_fulfilment (settlement_window_id);

ALTER TABLE transfer_error ADD COLUMN transfer_seq INTEGER NOT NULL DEFAULT 0;
UPDATE transfer_error SET transfer_seq =
  (SELECT t.transfer_seq FROM transfer t WHERE t.transfer_id = transfer_error.transfer_id);
DROP INDEX transfer_error_transfer;
CREATE INDEX transfer_error_seq ON transfer_error (transfer_seq, transfer_error_id);

CREATE TABLE transfer_duplicate_check_by_seq (
  transfer_seq INTEGER NOT NULL,
  transfer_id VARCHAR(64) NOT NULL,
  kind VARCHAR(16) NOT NULL,
  hash VARCHAR(64) NOT NULL,
  created_date VARCHAR(32) NOT NULL,
  PRIMARY KEY (transfer_seq, kind)
) WITHOUT ROWID;
INSERT INTO transfer_duplicate_check_by_seq (transfer_seq, transfer_id, kind, hash, created_date)
SELECT t.transfer_seq, d.transfer_id, d.kind, d.hash, d.created_date
FROM transfer_duplicate_check d JOIN transfer t ON t.transfer_id = d.transfer_id;
DROP TABLE transfer_duplicate_check;
ALTER TABLE transfer_duplicate_check_by_seq RENAME TO transfer_duplicate_check;

-- Only the invariant check looked position changes up by reference, and it
-- now groups them in one pass; the index took three random inserts per
-- transfer.
DROP INDEX participant_position_change_reference;
