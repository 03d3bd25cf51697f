"""Model monitoring: drift, performance and the report that shows them."""
