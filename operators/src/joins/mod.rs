//! Joins: regular, interval and window joins ([`join`]), lookup joins
//! against a table read whole ([`lookup`]) and event-time temporal joins
//! against a versioned table ([`temporal`]).

pub mod join;
pub mod lookup;
pub mod temporal;
