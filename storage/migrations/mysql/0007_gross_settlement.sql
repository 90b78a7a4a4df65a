-- Immediate gross settlement: a transfer settled at its commit. The row is
-- written with the payee's commit batch (so the window close, under its
-- lock, sees at once that the transfer is not for deferred settlement);
-- payer_settled_date is set by the payer's batch that completes it.
CREATE TABLE gross_settlement (
  transfer_id VARCHAR(64) NOT NULL PRIMARY KEY,
  settlement_model_id BIGINT NOT NULL,
  payer_settled_date VARCHAR(32) NULL,
  created_date VARCHAR(32) NOT NULL
);
