-- Transfers: the prepare as received, its insert-only state history, the
-- fulfilment, errors and duplicate-check hashes, and a minimal settlement
-- window table (the settlement issue completes it).

CREATE TABLE transfer (
  transfer_id VARCHAR(64) NOT NULL PRIMARY KEY,
  payer_fsp VARCHAR(32) NOT NULL,
  payee_fsp VARCHAR(32) NOT NULL,
  amount BIGINT NOT NULL,
  currency_id VARCHAR(3) NOT NULL,
  ilp_condition VARCHAR(64) NOT NULL,
  expiration VARCHAR(40) NOT NULL,
  expiration_ms BIGINT NOT NULL,
  ilp_packet MEDIUMTEXT NOT NULL,
  prepare_hash VARCHAR(64) NOT NULL,
  content_version VARCHAR(8) NOT NULL,
  created_date VARCHAR(32) NOT NULL
);

-- insert-only: every state of every transfer, with its reason
CREATE TABLE transfer_state_change (
  transfer_state_change_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  transfer_id VARCHAR(64) NOT NULL,
  state VARCHAR(32) NOT NULL,
  reason VARCHAR(512) NULL,
  created_date VARCHAR(32) NOT NULL
);
CREATE INDEX transfer_state_change_transfer ON transfer_state_change (transfer_id, transfer_state_change_id);

CREATE TABLE transfer_fulfilment (
  transfer_id VARCHAR(64) NOT NULL PRIMARY KEY,
  ilp_fulfilment VARCHAR(64) NOT NULL,
  completed_timestamp VARCHAR(40) NOT NULL,
  settlement_window_id BIGINT NOT NULL,
  created_date VARCHAR(32) NOT NULL
);

CREATE TABLE transfer_error (
  transfer_error_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  transfer_id VARCHAR(64) NOT NULL,
  error_code VARCHAR(4) NOT NULL,
  error_description VARCHAR(1024) NOT NULL,
  created_date VARCHAR(32) NOT NULL
);
CREATE INDEX transfer_error_transfer ON transfer_error (transfer_id, transfer_error_id);

-- hashes of the payee's fulfil and error messages, for duplicate detection
CREATE TABLE transfer_duplicate_check (
  transfer_id VARCHAR(64) NOT NULL,
  kind VARCHAR(16) NOT NULL,
  hash VARCHAR(64) NOT NULL,
  created_date VARCHAR(32) NOT NULL,
  PRIMARY KEY (transfer_id, kind)
);

CREATE TABLE settlement_window (
  settlement_window_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  reason VARCHAR(512) NULL,
  created_date VARCHAR(32) NOT NULL
);

-- insert-only: the state history of each window
CREATE TABLE settlement_window_state_change (
  settlement_window_state_change_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  settlement_window_id BIGINT NOT NULL,
  state VARCHAR(32) NOT NULL,
  reason VARCHAR(512) NULL,
  created_date VARCHAR(32) NOT NULL
);

INSERT INTO settlement_window (reason, created_date) VALUES ('initial window', '1970-01-01T00:00:00.000Z');
INSERT INTO settlement_window_state_change (settlement_window_id, state, reason, created_date) VALUES (1, 'OPEN', 'initial window', '1970-01-01T00:00:00.000Z');

CREATE INDEX participant_position_change_reference ON participant_position_change (reference);
