using System.Management.Automation;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.StoragePool;

/// <summary>Update-StoragePool: makes libvirt re-read a pool's volumes and space (pool-refresh).</summary>
[Cmdlet(VerbsData.Update, "StoragePool", SupportsShouldProcess = true, DefaultParameterSetName = ByName)]
[OutputType(typeof(Core.Pools.StoragePool))]
public sealed class UpdateStoragePoolCommand : PoolItemCmdlet
{
    /// <summary>Emit the pool afterwards.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessPool(Core.Pools.StoragePool pool)
    {
        if (ShouldProcess(Describe(pool), "Refresh the storage pool"))
        {
            Core.Pools.StoragePool result = KvmHost.RefreshPool(pool.Name);
            if (PassThru)
            {
                WriteObject(result);
            }
        }
    }
}
