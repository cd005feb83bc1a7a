# unknown=directive
# escape=`
FROM busybox AS base
  run   echo   indented   
RUN echo trailing escape at EOF \
FROM base
ENV K=V
