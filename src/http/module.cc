// Placeholder so the http library is never empty; removed when routes land.
namespace deltasync::http {}
