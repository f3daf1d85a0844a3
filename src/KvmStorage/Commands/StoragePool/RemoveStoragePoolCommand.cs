using System.Management.Automation;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.StoragePool;

/// <summary>Remove-StoragePool: undefines a pool. Volumes are never deleted; the empty target folder only on request.</summary>
[Cmdlet(VerbsCommon.Remove, "StoragePool", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High, DefaultParameterSetName = ByName)]
[OutputType(typeof(void))]
public sealed class RemoveStoragePoolCommand : PoolItemCmdlet
{
    /// <summary>Also delete the target folder, which must be empty.</summary>
    [Parameter]
    public SwitchParameter DeleteTargetDirectory { get; set; }

    protected override void ProcessPool(Core.Pools.StoragePool pool)
    {
        string action = DeleteTargetDirectory && pool.Path is not null
            ? $"Undefine the storage pool and delete its empty folder {pool.Path}"
            : "Undefine the storage pool (its volumes are kept)";
        if (ShouldProcess($"{pool.Name} ({pool.Type}, {pool.Path ?? pool.Source.ToString()})", action))
        {
            KvmHost.UndefinePool(pool.Name, DeleteTargetDirectory);
        }
    }
}
