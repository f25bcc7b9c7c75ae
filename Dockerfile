# syntax=docker/dockerfile:1
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /rotatord ./cmd/rotatord

FROM alpine:3.20
RUN adduser -D -H -u 10001 rotatord
USER rotatord
COPY --from=build /rotatord /rotatord
EXPOSE 8080
ENTRYPOINT ["/rotatord"]
CMD ["serve"]
