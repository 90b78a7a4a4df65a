-- Per window content, what each payer account sent each payee account:
-- the per-pair amounts a bilateral settlement is made of.
CREATE TABLE settlement_content_pair (
  settlement_content_pair_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  settlement_window_content_id BIGINT NOT NULL,
  payer_currency_id BIGINT NOT NULL,
  payee_currency_id BIGINT NOT NULL,
  amount BIGINT NOT NULL,
  transfer_count BIGINT NOT NULL
);
CREATE INDEX settlement_content_pair_content ON settlement_content_pair (settlement_window_content_id);
