DROP TABLE aws_resources;
