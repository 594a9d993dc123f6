"""Models: where weights come from (hub, folder, s3://, package:, tiny:), device and dtype, identity."""
