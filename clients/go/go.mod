module github.com/ensemble-gateway/ensemble/clients/go

go 1.22
