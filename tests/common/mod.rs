//! What the end-to-end tests share. Each test binary (`tests/*.rs`) declares
//! `mod common;` and uses the parts it needs, so some of it goes unused in any
//! one binary.
//!
//! - [`server`]: the loopback harness, a tonic server on 127.0.0.1:0 and a
//!   client of it, stopped when the test drops it.
//! - [`bound`]: every test that waits for time or I/O runs within a bound, so
//!   that a broken timer or a lost wake-up fails the test with a message
//!   instead of hanging it.
//! - [`events`]: a log of what happened to the calls of each method, written
//!   by the handlers below and by [`events::Recorder`], an interceptor that
//!   runs first and never rejects.
//! - [`handlers`]: routeguide handlers that misbehave on request (panic, fail,
//!   never answer, stop reading, stay open), and `service!`, which stamps out
//!   a service of them with a given `#[intercept(..)]` list.
//! - [`traces`]: a `tracing` layer that keeps the events a test emits.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod bound;
pub mod events;
pub mod handlers;
pub mod redis;
pub mod server;
pub mod traces;

pub use bound::{eventually, in_real_time, on_paused_clock};
pub use server::{serve, serve_and_connect, serve_routes, Server};
