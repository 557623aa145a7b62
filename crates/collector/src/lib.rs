//! amid: the ami site daemon.
