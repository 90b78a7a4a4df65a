-- Account lookup: the built-in oracle's registrations (party -> FSP) and
-- the oracle configuration managed through the ALS admin API.

CREATE TABLE party_registration (
  party_id_type VARCHAR(32) NOT NULL,
  party_identifier VARCHAR(128) NOT NULL,
  party_sub_id VARCHAR(128) NOT NULL,
  currency_id VARCHAR(3) NOT NULL,
  fsp_id VARCHAR(32) NOT NULL,
  created_date VARCHAR(32) NOT NULL,
  PRIMARY KEY (party_id_type, party_identifier, party_sub_id, currency_id)
);

CREATE TABLE oracle_endpoint (
  oracle_endpoint_id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  party_id_type VARCHAR(32) NOT NULL,
  endpoint_type VARCHAR(16) NOT NULL,
  value VARCHAR(512) NOT NULL,
  currency_id VARCHAR(3) NULL,
  is_default BIGINT NOT NULL,
  is_active BIGINT NOT NULL,
  created_date VARCHAR(32) NOT NULL
);
