DROP TABLE model_firmware;
