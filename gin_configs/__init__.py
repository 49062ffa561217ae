"""Gin configuration files. Being a package lets gin find `gin_configs/NAME.gin` (and the files'
`include` lines) from any working directory once the project is installed."""
