-- Settlement: the open window as one locked row, window content and its
-- aggregation per participant account, settlements with their windows and
-- participant accounts, each with an insert-only state history and a
-- current-state column changed in the same transaction as its history row.

-- Every commit batch updates this row before it records fulfilments, and a
-- window close updates it to the next window: the row lock orders every
-- commit strictly before or after a close, so none is lost or counted twice.
CREATE TABLE settlement_window_open (
  singleton BIGINT NOT NULL PRIMARY KEY,
  settlement_window_id BIGINT NOT NULL,
  commit_batches BIGINT NOT NULL DEFAULT 0
);
INSERT INTO settlement_window_open (singleton, settlement_window_id, commit_batches)
SELECT 1, MAX(settlement_window_id), 0 FROM settlement_window;

ALTER TABLE settlement_window ADD COLUMN state VARCHAR(32) NOT NULL DEFAULT 'OPEN';
ALTER TABLE settlement_window ADD COLUMN changed_date VARCHAR(32) NULL;
UPDATE settlement_window SET state = 'CLOSED'
WHERE settlement_window_id < (SELECT settlement_window_id FROM settlement_window_open WHERE singleton = 1);

CREATE INDEX transfer_fulfilment_window ON transfer_fulfilment (settlement_window_id);

CREATE TABLE settlement_window_content (
  settlement_window_content_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  settlement_window_id BIGINT NOT NULL,
  ledger_account_type VARCHAR(50) NOT NULL,
  currency_id VARCHAR(3) NOT NULL,
  state VARCHAR(32) NOT NULL,
  settlement_id BIGINT NULL,
  created_date VARCHAR(32) NOT NULL,
  changed_date VARCHAR(32) NOT NULL
);
CREATE INDEX settlement_window_content_window ON settlement_window_content (settlement_window_id);

CREATE TABLE settlement_window_content_state_change (
  settlement_window_content_state_change_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  settlement_window_content_id BIGINT NOT NULL,
  state VARCHAR(32) NOT NULL,
  reason VARCHAR(512) NULL,
  created_date VARCHAR(32) NOT NULL
);

-- Per window content and participant account: what it sent as payer and
-- received as payee (amounts in 1/10000 units).
CREATE TABLE settlement_content_aggregation (
  settlement_content_aggregation_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  settlement_window_content_id BIGINT NOT NULL,
  participant_currency_id BIGINT NOT NULL,
  sent_amount BIGINT NOT NULL,
  sent_count BIGINT NOT NULL,
  received_amount BIGINT NOT NULL,
  received_count BIGINT NOT NULL
);
CREATE INDEX settlement_content_aggregation_content ON settlement_content_aggregation (settlement_window_content_id);

CREATE TABLE settlement (
  settlement_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  settlement_model_id BIGINT NOT NULL,
  reason VARCHAR(512) NULL,
  state VARCHAR(32) NOT NULL,
  created_date VARCHAR(32) NOT NULL,
  changed_date VARCHAR(32) NOT NULL
);

CREATE TABLE settlement_state_change (
  settlement_state_change_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  settlement_id BIGINT NOT NULL,
  state VARCHAR(32) NOT NULL,
  reason VARCHAR(512) NULL,
  created_date VARCHAR(32) NOT NULL
);

CREATE TABLE settlement_settlement_window (
  settlement_id BIGINT NOT NULL,
  settlement_window_id BIGINT NOT NULL,
  PRIMARY KEY (settlement_id, settlement_window_id)
);

CREATE TABLE settlement_participant_currency (
  settlement_participant_currency_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  settlement_id BIGINT NOT NULL,
  participant_currency_id BIGINT NOT NULL,
  net_amount BIGINT NOT NULL,
  state VARCHAR(32) NOT NULL,
  reason VARCHAR(512) NULL,
  external_reference VARCHAR(256) NULL,
  created_date VARCHAR(32) NOT NULL,
  changed_date VARCHAR(32) NOT NULL,
  UNIQUE (settlement_id, participant_currency_id)
);

CREATE TABLE settlement_participant_currency_state_change (
  settlement_participant_currency_state_change_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  settlement_participant_currency_id BIGINT NOT NULL,
  state VARCHAR(32) NOT NULL,
  reason VARCHAR(512) NULL,
  external_reference VARCHAR(256) NULL,
  created_date VARCHAR(32) NOT NULL
);
