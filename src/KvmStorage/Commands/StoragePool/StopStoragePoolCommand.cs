using System.Management.Automation;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.StoragePool;

/// <summary>Stop-StoragePool: stops (deactivates) storage pools; their data is untouched.</summary>
[Cmdlet(VerbsLifecycle.Stop, "StoragePool", SupportsShouldProcess = true, DefaultParameterSetName = ByName)]
[OutputType(typeof(Core.Pools.StoragePool))]
public sealed class StopStoragePoolCommand : PoolItemCmdlet
{
    /// <summary>Emit the pool afterwards.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessPool(Core.Pools.StoragePool pool)
    {
        if (ShouldProcess(Describe(pool), "Stop the storage pool (its data is kept)"))
        {
            Core.Pools.StoragePool result = KvmHost.StopPool(pool.Name);
            if (PassThru)
            {
                WriteObject(result);
            }
        }
    }
}
