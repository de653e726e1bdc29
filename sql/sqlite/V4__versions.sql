-- Licensing core: a version per row that several writers touch (bumped by
-- every write; the ETag of its GET, and the condition of a change computed
-- from an earlier read), and revocation made terminal in the schema itself.
ALTER TABLE products ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE accounts ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE licenses ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE instances ADD COLUMN version INTEGER NOT NULL DEFAULT 1;

-- A revoked license never changes again, whatever statement tries.
CREATE TRIGGER licenses_revoked_is_final BEFORE UPDATE ON licenses
WHEN OLD.status = 'revoked'
BEGIN
    SELECT RAISE(ABORT, 'license is revoked; revocation is final');
END;
