"""高空抛物: objects thrown or falling from a building, with the floor and window they left."""
