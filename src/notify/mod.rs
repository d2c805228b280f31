//! Notify: pages to the on-call human.
