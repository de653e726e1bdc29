-- Licensing core: a version per row that several writers touch (bumped by
-- every write; the ETag of its GET, and the condition of a change computed
-- from an earlier read), and revocation made terminal in the schema itself.
ALTER TABLE products ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE accounts ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE licenses ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE instances ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- A revoked license never changes again, whatever statement tries.
CREATE FUNCTION licenses_revoked_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'license % is revoked; revocation is final', OLD.lid
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE TRIGGER licenses_revoked_is_final BEFORE UPDATE ON licenses
    FOR EACH ROW WHEN (OLD.status = 'revoked')
    EXECUTE FUNCTION licenses_revoked_is_final();
