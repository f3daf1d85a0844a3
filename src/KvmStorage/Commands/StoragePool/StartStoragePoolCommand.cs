using System.Management.Automation;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.StoragePool;

/// <summary>Start-StoragePool: starts (activates) storage pools, optionally building them first.</summary>
[Cmdlet(VerbsLifecycle.Start, "StoragePool", SupportsShouldProcess = true, DefaultParameterSetName = ByName)]
[OutputType(typeof(Core.Pools.StoragePool))]
public sealed class StartStoragePoolCommand : PoolItemCmdlet
{
    /// <summary>Build the pool's storage first (create a dir pool's folder, format a disk).</summary>
    [Parameter]
    public SwitchParameter Build { get; set; }

    /// <summary>Emit the pool afterwards.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessPool(Core.Pools.StoragePool pool)
    {
        if (ShouldProcess(Describe(pool), "Start the storage pool"))
        {
            Core.Pools.StoragePool result = KvmHost.StartPool(pool.Name, Build);
            if (PassThru)
            {
                WriteObject(result);
            }
        }
    }
}
