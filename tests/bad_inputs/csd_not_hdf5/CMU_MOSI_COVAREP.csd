<html><body><h1>404 Not Found</h1></body></html>
