DROP TABLE "Audit Log";
