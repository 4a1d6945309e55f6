"""MongoDB under the failures a replica set has: fault injection over mongomock."""
