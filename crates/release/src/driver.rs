//! The request driver.
