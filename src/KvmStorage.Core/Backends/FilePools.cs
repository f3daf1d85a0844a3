using KvmStorage.Core.Pools;

namespace KvmStorage.Core.Backends;

public static class FilePools
{
    /// <summary>
    /// The pools whose volumes are files in a folder that exists on this machine now (dir, fs and netfs pools with
    /// a local target): the pools a listing of every volume walks. Pools that cannot be read are left out.
    /// </summary>
    public static IEnumerable<StoragePool> ListFilePools(this IKvmHost host) =>
        host.ListPools()
            .Select(r => r.Pool)
            .OfType<StoragePool>()
            .Where(p => p.PoolType.HoldsFileVolumes() && p.LocalPath is not null && Directory.Exists(p.LocalPath));
}
