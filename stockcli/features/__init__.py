"""Pure feature computation: technical indicators, alignment, next-session targets, splits, windows
and scalers, and the forecasting input primitive. Frames and arrays in, arrays out; no database, no
network, no clock."""
