-- mojaswitch schema. History tables are insert-only; current-value tables are
-- updated in place. Amounts are exact scaled integers: units of 1/10000
-- (4 decimal places), so 18 significant digits fit in a signed 64-bit integer.

CREATE TABLE currency (
  currency_id VARCHAR(3) NOT NULL PRIMARY KEY,
  scale BIGINT NOT NULL,
  is_active BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE ledger_account_type (
  ledger_account_type_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(50) NOT NULL UNIQUE,
  description VARCHAR(512) NULL,
  is_active BIGINT NOT NULL DEFAULT 1,
  is_settleable BIGINT NOT NULL DEFAULT 0,
  created_date VARCHAR(32) NOT NULL
);

CREATE TABLE endpoint_type (
  name VARCHAR(64) NOT NULL PRIMARY KEY
);

CREATE TABLE participant (
  participant_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(256) NOT NULL UNIQUE,
  is_active BIGINT NOT NULL DEFAULT 1,
  is_proxy BIGINT NOT NULL DEFAULT 0,
  created_date VARCHAR(32) NOT NULL,
  created_by VARCHAR(128) NOT NULL
);

-- insert-only: every activation or deactivation of a participant
CREATE TABLE participant_status_change (
  participant_status_change_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  participant_id BIGINT NOT NULL,
  is_active BIGINT NOT NULL,
  reason VARCHAR(512) NULL,
  created_date VARCHAR(32) NOT NULL
);

-- a ledger account: one per participant, currency and ledger account type
CREATE TABLE participant_currency (
  participant_currency_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  participant_id BIGINT NOT NULL,
  currency_id VARCHAR(3) NOT NULL,
  ledger_account_type_id BIGINT NOT NULL,
  is_active BIGINT NOT NULL DEFAULT 1,
  created_date VARCHAR(32) NOT NULL,
  created_by VARCHAR(128) NOT NULL,
  UNIQUE (participant_id, currency_id, ledger_account_type_id)
);

-- insert-only: every activation or deactivation of an account
CREATE TABLE participant_currency_status_change (
  participant_currency_status_change_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  participant_currency_id BIGINT NOT NULL,
  is_active BIGINT NOT NULL,
  created_date VARCHAR(32) NOT NULL
);

-- current value of each account; changed only together with a position change row
CREATE TABLE participant_position (
  participant_position_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  participant_currency_id BIGINT NOT NULL UNIQUE,
  value BIGINT NOT NULL DEFAULT 0,
  reserved_value BIGINT NOT NULL DEFAULT 0,
  changed_date VARCHAR(32) NOT NULL
);

-- insert-only: every change of an account, with the running balance after it
CREATE TABLE participant_position_change (
  participant_position_change_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  participant_position_id BIGINT NOT NULL,
  participant_currency_id BIGINT NOT NULL,
  value BIGINT NOT NULL,
  reserved_value BIGINT NOT NULL,
  change_value BIGINT NOT NULL,
  change_reserved BIGINT NOT NULL,
  kind VARCHAR(40) NOT NULL,
  reference VARCHAR(64) NULL,
  created_date VARCHAR(32) NOT NULL
);
CREATE INDEX participant_position_change_position ON participant_position_change (participant_position_id, participant_position_change_id);

-- insert-only: the current limit is the newest row per account and type
CREATE TABLE participant_limit (
  participant_limit_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  participant_currency_id BIGINT NOT NULL,
  limit_type VARCHAR(50) NOT NULL,
  value BIGINT NOT NULL,
  threshold_alarm_percentage BIGINT NOT NULL,
  created_date VARCHAR(32) NOT NULL,
  created_by VARCHAR(128) NOT NULL
);
CREATE INDEX participant_limit_account ON participant_limit (participant_currency_id, limit_type, participant_limit_id);

-- insert-only: the current endpoint is the newest row per participant and type
CREATE TABLE participant_endpoint (
  participant_endpoint_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  participant_id BIGINT NOT NULL,
  endpoint_type VARCHAR(64) NOT NULL,
  value VARCHAR(1024) NOT NULL,
  created_date VARCHAR(32) NOT NULL,
  created_by VARCHAR(128) NOT NULL
);
CREATE INDEX participant_endpoint_type ON participant_endpoint (participant_id, endpoint_type, participant_endpoint_id);

CREATE TABLE settlement_model (
  settlement_model_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(50) NOT NULL UNIQUE,
  is_active BIGINT NOT NULL DEFAULT 1,
  settlement_granularity VARCHAR(16) NOT NULL,
  settlement_interchange VARCHAR(16) NOT NULL,
  settlement_delay VARCHAR(16) NOT NULL,
  currency_id VARCHAR(3) NULL,
  require_liquidity_check BIGINT NOT NULL,
  ledger_account_type VARCHAR(50) NOT NULL,
  settlement_account_type VARCHAR(50) NOT NULL,
  auto_position_reset BIGINT NOT NULL,
  created_date VARCHAR(32) NOT NULL
);

-- operator transfers: funds in, funds out (reserve, then commit or abort)
CREATE TABLE admin_transfer (
  transfer_id VARCHAR(64) NOT NULL PRIMARY KEY,
  participant_currency_id BIGINT NOT NULL,
  action VARCHAR(40) NOT NULL,
  amount BIGINT NOT NULL,
  currency_id VARCHAR(3) NOT NULL,
  external_reference VARCHAR(256) NOT NULL,
  reason VARCHAR(512) NOT NULL,
  request_hash VARCHAR(64) NOT NULL,
  created_date VARCHAR(32) NOT NULL
);

-- insert-only: the state history of each operator transfer
CREATE TABLE admin_transfer_state_change (
  admin_transfer_state_change_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  transfer_id VARCHAR(64) NOT NULL,
  state VARCHAR(32) NOT NULL,
  reason VARCHAR(512) NULL,
  created_date VARCHAR(32) NOT NULL
);
CREATE INDEX admin_transfer_state_change_transfer ON admin_transfer_state_change (transfer_id, admin_transfer_state_change_id);

INSERT INTO currency (currency_id, scale) VALUES
('AED', 2),
('AFN', 2),
('ALL', 2),
('AMD', 2),
('ANG', 2),
('AOA', 2),
('ARS', 2),
('AUD', 2),
('AWG', 2),
('AZN', 2),
('BAM', 2),
('BBD', 2),
('BDT', 2),
('BGN', 2),
('BHD', 3),
('BIF', 0),
('BMD', 2),
('BND', 2),
('BOB', 2),
('BRL', 2),
('BSD', 2),
('BTN', 2),
('BWP', 2),
('BYN', 2),
('BZD', 2),
('CAD', 2),
('CDF', 2),
('CHF', 2),
('CLP', 0),
('CNY', 2),
('COP', 2),
('CRC', 2),
('CUC', 2),
('CUP', 2),
('CVE', 2),
('CZK', 2),
('DJF', 0),
('DKK', 2),
('DOP', 2),
('DZD', 2),
('EGP', 2),
('ERN', 2),
('ETB', 2),
('EUR', 2),
('FJD', 2),
('FKP', 2),
('GBP', 2),
('GEL', 2),
('GGP', 2),
('GHS', 2),
('GIP', 2),
('GMD', 2),
('GNF', 0),
('GTQ', 2),
('GYD', 2),
('HKD', 2),
('HNL', 2),
('HRK', 2),
('HTG', 2),
('HUF', 2),
('IDR', 2),
('ILS', 2),
('IMP', 2),
('INR', 2),
('IQD', 3),
('IRR', 2),
('ISK', 0),
('JEP', 2),
('JMD', 2),
('JOD', 3),
('JPY', 0),
('KES', 2),
('KGS', 2),
('KHR', 2),
('KMF', 0),
('KPW', 2),
('KRW', 0),
('KWD', 3),
('KYD', 2),
('KZT', 2),
('LAK', 2),
('LBP', 2),
('LKR', 2),
('LRD', 2),
('LSL', 2),
('LYD', 3),
('MAD', 2),
('MDL', 2),
('MGA', 2),
('MKD', 2),
('MMK', 2),
('MNT', 2),
('MOP', 2),
('MRO', 2),
('MUR', 2),
('MVR', 2),
('MWK', 2),
('MXN', 2),
('MYR', 2),
('MZN', 2),
('NAD', 2),
('NGN', 2),
('NIO', 2),
('NOK', 2),
('NPR', 2),
('NZD', 2),
('OMR', 3),
('PAB', 2),
('PEN', 2),
('PGK', 2),
('PHP', 2),
('PKR', 2),
('PLN', 2),
('PYG', 0),
('QAR', 2),
('RON', 2),
('RSD', 2),
('RUB', 2),
('RWF', 0),
('SAR', 2),
('SBD', 2),
('SCR', 2),
('SDG', 2),
('SEK', 2),
('SGD', 2),
('SHP', 2),
('SLL', 2),
('SOS', 2),
('SPL', 2),
('SRD', 2),
('STD', 2),
('SVC', 2),
('SYP', 2),
('SZL', 2),
('THB', 2),
('TJS', 2),
('TMT', 2),
('TND', 3),
('TOP', 2),
('TRY', 2),
('TTD', 2),
('TVD', 2),
('TWD', 2),
('TZS', 2),
('UAH', 2),
('UGX', 0),
('USD', 2),
('UYU', 2),
('UZS', 2),
('VEF', 2),
('VND', 0),
('VUV', 0),
('WST', 2),
('XAF', 0),
('XCD', 2),
('XDR', 2),
('XOF', 0),
('XPF', 0),
('YER', 2),
('ZAR', 2),
('ZMW', 2),
('ZWD', 2);

INSERT INTO ledger_account_type (name, description, is_active, is_settleable, created_date) VALUES
('POSITION', 'Typical accounts from which a DFSP provisions transfers', 1, 1, '1970-01-01T00:00:00.000Z'),
('SETTLEMENT', 'Reflects the individual DFSP Settlement Accounts as held at the Settlement Bank', 1, 0, '1970-01-01T00:00:00.000Z'),
('HUB_RECONCILIATION', 'A single account for each currency with which the hub operates. The account is "held" by the Participant representing the hub in the switch', 1, 0, '1970-01-01T00:00:00.000Z'),
('HUB_MULTILATERAL_SETTLEMENT', 'A single account for each currency with which the hub operates. The account is "held" by the Participant representing the hub in the switch', 1, 0, '1970-01-01T00:00:00.000Z'),
('INTERCHANGE_FEE', 'Interchange fees owed by and to DFSPs', 1, 1, '1970-01-01T00:00:00.000Z'),
('INTERCHANGE_FEE_SETTLEMENT', 'Settlement account for interchange fees', 1, 0, '1970-01-01T00:00:00.000Z');

INSERT INTO endpoint_type (name) VALUES
('ALARM_NOTIFICATION_URL'),
('ALARM_NOTIFICATION_TOPIC'),
('NET_DEBIT_CAP_THRESHOLD_BREACH_EMAIL'),
('NET_DEBIT_CAP_ADJUSTMENT_EMAIL'),
('SETTLEMENT_TRANSFER_POSITION_CHANGE_EMAIL'),
('FSPIOP_CALLBACK_URL'),
('FSPIOP_CALLBACK_URL_TRANSFER_POST'),
('FSPIOP_CALLBACK_URL_TRANSFER_PUT'),
('FSPIOP_CALLBACK_URL_TRANSFER_ERROR'),
('FSPIOP_CALLBACK_URL_FX_QUOTES'),
('FSPIOP_CALLBACK_URL_FX_TRANSFER_POST'),
('FSPIOP_CALLBACK_URL_FX_TRANSFER_PUT'),
('FSPIOP_CALLBACK_URL_FX_TRANSFER_ERROR'),
('FSPIOP_CALLBACK_URL_PARTICIPANT_PUT'),
('FSPIOP_CALLBACK_URL_PARTICIPANT_PUT_ERROR'),
('FSPIOP_CALLBACK_URL_PARTICIPANT_SUB_ID_PUT'),
('FSPIOP_CALLBACK_URL_PARTICIPANT_SUB_ID_PUT_ERROR'),
('FSPIOP_CALLBACK_URL_PARTICIPANT_DELETE'),
('FSPIOP_CALLBACK_URL_PARTICIPANT_SUB_ID_DELETE'),
('FSPIOP_CALLBACK_URL_PARTICIPANT_BATCH_PUT'),
('FSPIOP_CALLBACK_URL_PARTICIPANT_BATCH_PUT_ERROR'),
('FSPIOP_CALLBACK_URL_PARTIES_GET'),
('FSPIOP_CALLBACK_URL_PARTIES_SUB_ID_GET'),
('FSPIOP_CALLBACK_URL_PARTIES_PUT'),
('FSPIOP_CALLBACK_URL_PARTIES_SUB_ID_PUT'),
('FSPIOP_CALLBACK_URL_PARTIES_PUT_ERROR'),
('FSPIOP_CALLBACK_URL_PARTIES_SUB_ID_PUT_ERROR'),
('FSPIOP_CALLBACK_URL_QUOTES'),
('FSPIOP_CALLBACK_URL_BULK_QUOTES'),
('FSPIOP_CALLBACK_URL_BULK_TRANSFER_POST'),
('FSPIOP_CALLBACK_URL_BULK_TRANSFER_PUT'),
('FSPIOP_CALLBACK_URL_BULK_TRANSFER_ERROR'),
('FSPIOP_CALLBACK_URL_TRX_REQ_SERVICE'),
('FSPIOP_CALLBACK_URL_AUTHORIZATIONS'),
('TP_CB_URL_TRANSACTION_REQUEST_GET'),
('TP_CB_URL_TRANSACTION_REQUEST_POST'),
('TP_CB_URL_TRANSACTION_REQUEST_PUT'),
('TP_CB_URL_TRANSACTION_REQUEST_PUT_ERROR'),
('TP_CB_URL_TRANSACTION_REQUEST_PATCH'),
('TP_CB_URL_TRANSACTION_REQUEST_AUTH_POST'),
('TP_CB_URL_TRANSACTION_REQUEST_AUTH_PUT'),
('TP_CB_URL_TRANSACTION_REQUEST_AUTH_PUT_ERROR'),
('TP_CB_URL_TRANSACTION_REQUEST_VERIFY_POST'),
('TP_CB_URL_TRANSACTION_REQUEST_VERIFY_PUT'),
('TP_CB_URL_TRANSACTION_REQUEST_VERIFY_PUT_ERROR'),
('TP_CB_URL_CONSENT_REQUEST_PATCH'),
('TP_CB_URL_CONSENT_REQUEST_POST'),
('TP_CB_URL_CONSENT_REQUEST_PUT'),
('TP_CB_URL_CONSENT_REQUEST_PUT_ERROR'),
('TP_CB_URL_CREATE_CREDENTIAL_POST'),
('TP_CB_URL_CONSENT_POST'),
('TP_CB_URL_CONSENT_GET'),
('TP_CB_URL_CONSENT_PUT'),
('TP_CB_URL_CONSENT_PATCH'),
('TP_CB_URL_CONSENT_PUT_ERROR'),
('TP_CB_URL_ACCOUNTS_GET'),
('TP_CB_URL_ACCOUNTS_PUT'),
('TP_CB_URL_ACCOUNTS_PUT_ERROR'),
('TP_CB_URL_SERVICES_GET'),
('TP_CB_URL_SERVICES_PUT'),
('TP_CB_URL_SERVICES_PUT_ERROR'),
('TPP_CB_URL_CONSENT_REQUEST_PATCH');
