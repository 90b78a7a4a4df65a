-- Transfer rows and their history are keyed by an ever-increasing
-- transfer_seq instead of the DFSP's transfer id.
--
-- Why: transfer ids are random (UUID v4 from most DFSPs). With the id as a
-- clustered primary key, and as the leading column of every history index,
-- each new transfer inserted into five B-trees at random pages. Once the
-- tables outgrew the buffer pool every transfer cost five cold page reads and
-- five dirty pages, and a 2-core node could not flush fast enough to hold
-- 3,000 transfers/s for more than ~30 s (docs/performance.md). Now the only
-- random-key index is the small unique index transfer_id -> transfer_seq;
-- everything else is appended at the right edge of its B-tree.

ALTER TABLE transfer
  DROP PRIMARY KEY,
  ADD COLUMN transfer_seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY FIRST,
  ADD UNIQUE KEY transfer_id_unique (transfer_id);

ALTER TABLE transfer_state_change ADD COLUMN transfer_seq BIGINT NULL AFTER transfer_state_change_id;
UPDATE transfer_state_change s JOIN transfer t ON t.transfer_id = s.transfer_id SET s.transfer_seq = t.transfer_seq;
ALTER TABLE transfer_state_change
  MODIFY transfer_seq BIGINT NOT NULL,
  DROP INDEX transfer_state_change_transfer,
  ADD INDEX transfer_state_change_seq (transfer_seq, transfer_state_change_id);

ALTER TABLE transfer_fulfilment ADD COLUMN transfer_seq BIGINT NULL FIRST;
UPDATE transfer_fulfilment f JOIN transfer t ON t.transfer_id = f.transfer_id SET f.transfer_seq = t.transfer_seq;
ALTER TABLE transfer_fulfilment
  MODIFY transfer_seq BIGINT NOT NULL,
  DROP PRIMARY KEY,
  ADD PRIMARY KEY (transfer_seq);

ALTER TABLE transfer_error ADD COLUMN transfer_seq BIGINT NULL AFTER transfer_error_id;
UPDATE transfer_error e JOIN transfer t ON t.transfer_id = e.transfer_id SET e.transfer_seq = t.transfer_seq;
ALTER TABLE transfer_error
  MODIFY transfer_seq BIGINT NOT NULL,
  DROP INDEX transfer_error_transfer,
  ADD INDEX transfer_error_seq (transfer_seq, transfer_error_id);

ALTER TABLE transfer_duplicate_check ADD COLUMN transfer_seq BIGINT NULL FIRST;
UPDATE transfer_duplicate_check d JOIN transfer t ON t.transfer_id = d.transfer_id SET d.transfer_seq = t.transfer_seq;
ALTER TABLE transfer_duplicate_check
  MODIFY transfer_seq BIGINT NOT NULL,
  DROP PRIMARY KEY,
  ADD PRIMARY KEY (transfer_seq, kind);

-- Only the invariant check looked position changes up by reference, and it
-- now groups them in one pass; the index took three random inserts per
-- transfer.
DROP INDEX participant_position_change_reference ON participant_position_change;
