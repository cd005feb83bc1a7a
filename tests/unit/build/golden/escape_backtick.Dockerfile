# escape=`

FROM busybox
RUN echo one `
    two
COPY c:\path\file.txt /x
ENV WIN=c:\dir
