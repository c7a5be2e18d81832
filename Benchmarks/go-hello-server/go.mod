module go-hello-server

go 1.19
