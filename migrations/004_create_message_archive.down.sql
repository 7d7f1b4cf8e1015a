-- Reverts 004_create_message_archive.up.sql.
DROP TABLE message_archive;
